//! The mutating admission webhook injecting the FaceKey runtime as a native sidecar into
//! application pods annotated `facekey.dev/inject: <FaceKeyDeployment name>`.
//!
//! - [`inject`]: the decision and its JSON patch (pure);
//! - [`review`]: AdmissionReview v1 in and out (pure but for the lookup);
//! - [`certs`]: the private CA and serving certificate, issued and rotated (pure);
//! - [`server`]: the HTTPS server with a certificate swapped in place on rotation;
//! - [`events`]: Events about pods that did not get their sidecar;
//! - [`event_limit`]: the rate limit on those Events (pure but for the clock);
//! - [`manage`]: the certificate Secret and the configuration's `caBundle`, kept current;
//! - [`sidecars`]: the count of injected and outdated pods in `status.sidecar`;
//! - [`limit_range`]: the namespace's LimitRanges against the sidecar (pure).
//! - [`quota`]: the namespace's ResourceQuotas against the pod with the sidecar (pure).

pub mod certs;
pub mod event_limit;
pub mod events;
pub mod inject;
pub mod limit_range;
pub mod manage;
pub mod quota;
pub mod review;
pub mod server;
pub mod sidecars;

pub use inject::{Decision, InjectOptions, NotInjectedReason, OPT_OUT_ANNOTATION};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tracing::{info, warn};

use crate::decode::{Decoder, UnknownFields};
use crate::metrics::Metrics;

/// How often the leader counts injected and outdated sidecars.
pub const COUNT_EVERY: Duration = Duration::from_secs(30);

/// Settings of the webhook part of `facekey-operator run`.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// HTTPS address (default `0.0.0.0:9443`).
    pub listen: SocketAddr,
    /// Certificate Secret, webhook configuration, names and issuer.
    pub targets: manage::CertTargets,
    /// The operator's injection settings.
    pub options: InjectOptions,
    /// Namespace to watch, or all.
    pub watch_namespace: Option<String>,
    /// This replica's identity (Events, and the sidecar counter's leadership check).
    pub identity: String,
    /// Leader Lease (namespace, name): only the leader counts sidecars.
    pub lease: (String, String),
    /// How often certificates are checked (rotated when due, reloaded when another replica
    /// rotated them, the `caBundle` put back when it differs): [`CERT_CHECK_EVERY`].
    pub every: Duration,
    /// The operator's metrics: admissions by outcome, their latency, certificate expiry and
    /// rotations are recorded here and served on the operator's `/metrics`.
    pub metrics: Metrics,
    /// CAs of the client certificate the API server presents (`--webhook-client-ca`): when
    /// set, only clients with a certificate they issued are served. `None`: any client.
    pub client_cas: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
}

/// How often each replica checks the webhook certificates and the configuration's `caBundle`
/// (a GET of each; writes only on a change). A `caBundle` lost to a re-created or replaced
/// configuration (an Argo CD `Replace=true` sync, a restore from backup) makes every admission
/// call fail TLS, and `failurePolicy: Ignore` then admits pods without their sidecar: it is put
/// back within this.
pub const CERT_CHECK_EVERY: Duration = Duration::from_secs(30);

/// What `/readyz` of a replica serving the webhook waits for ([`start`]).
#[derive(Clone, Debug)]
pub struct Serving {
    /// The serving certificate: until one is loaded TLS handshakes fail, and the API server
    /// admits pods without their sidecar (`failurePolicy: Ignore`).
    pub cert: Arc<server::ReloadingCert>,
    /// Set once the FaceKeyDeployment cache has its first list: before, every review reads its
    /// resource from the API server, a read that may fail or be slow when the API server is
    /// struggling (the pod then answered as for an unknown resource).
    pub resources_synced: Arc<AtomicBool>,
}

impl Serving {
    /// Why the replica must not be sent admission reviews yet, if it must not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.cert.is_loaded() {
            Some("the sidecar webhook has no certificate yet")
        } else if !self.resources_synced.load(Ordering::Acquire) {
            Some("the sidecar webhook's FaceKeyDeployment cache has not synced yet")
        } else {
            None
        }
    }
}

/// Start the webhook on every replica (leader or standby: admission must not wait for an
/// election): the FaceKeyDeployment cache, the certificate upkeep, the HTTPS server and the
/// sidecar counter. Returns once the listener is bound, with what readiness waits for; until a
/// certificate is loaded, handshakes fail and the API server applies the configuration's
/// `failurePolicy: Ignore`.
pub async fn start(client: Client, config: WebhookConfig) -> Result<Serving, server::TlsError> {
    let listener = server::bind(config.listen).await?;
    let cert = Arc::new(server::ReloadingCert::default());
    let tls = server::tls_config(cert.clone(), config.client_cas.as_deref())?;
    let served_cert = cert.clone();

    // Untyped and decoded one by one, as the controller's watch (crate::decode): a resource
    // this operator cannot read must not keep the cache from syncing for every other.
    let api = crate::decode::api(client.clone(), config.watch_namespace.as_deref());
    let (store, writer) = reflector::store();
    let synced = Arc::new(AtomicBool::new(false));
    // Unknown spec fields ignored: a newer CRD's defaulted fields must not stop injection
    // while the operator is being upgraded.
    let decoder = Arc::new(std::sync::Mutex::new(Decoder::new(UnknownFields::Ignore)));
    let watch_decoder = decoder.clone();
    tokio::spawn(
        crate::watching::counted(
            watcher(api, watcher::Config::default()).default_backoff(),
            (
                crate::watching::Component::Webhook,
                "FaceKeyDeployment",
                config.metrics.watch_errors.clone(),
            ),
        )
        .map_ok(move |event| {
            watch_decoder
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .event(event)
                .0
        })
        .reflect(writer)
        .touched_objects()
        .for_each(|_| futures::future::ready(())),
    );
    mark_when_ready(store.clone(), synced.clone(), "FaceKeyDeployment");
    let serving = Serving {
        cert: served_cert,
        resources_synced: synced.clone(),
    };

    let targets = config.targets.clone();
    let (cert_client, every, cert_metrics) = (client.clone(), config.every, config.metrics.clone());
    tokio::spawn(async move {
        // Retry until the first certificate is in place, then keep it current.
        loop {
            match manage::keep_certificates(
                cert_client.clone(),
                targets.clone(),
                cert.clone(),
                every,
                cert_metrics.clone(),
                futures::future::pending::<()>(),
            )
            .await
            {
                Ok(_handle) => return,
                Err(e) => {
                    warn!(error = %e, at = %Timestamp::now(), "webhook certificates not ready; retrying in 10 s");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        }
    });

    // The LimitRanges and ResourceQuotas the pod with the sidecar must fit (best effort: until
    // both caches have synced, or when RBAC denies a watch, neither is checked and the API
    // server has the last word).
    let limit_ranges =
        watched::<k8s_openapi::api::core::v1::LimitRange>(&client, &config, "LimitRange");
    let resource_quotas =
        watched::<k8s_openapi::api::core::v1::ResourceQuota>(&client, &config, "ResourceQuota");
    let state = server::WebhookState {
        limit_ranges,
        resource_quotas,
        resources: server::Resources::Watched {
            store,
            decoder,
            synced,
            client: client.clone(),
        },
        options: config.options,
        events: Some(events::EventSink::new(
            client.clone(),
            Some(config.identity.clone()),
            config.metrics.clone(),
        )),
        metrics: config.metrics.clone(),
        scope: config.watch_namespace.clone(),
    };
    info!(listen = %config.listen, "sidecar injection webhook listening (HTTPS)");
    tokio::spawn(server::serve_tls(
        listener,
        tls,
        server::router(state),
        futures::future::pending::<()>(),
    ));
    let (lease_ns, lease_name) = config.lease;
    tokio::spawn(sidecars::run_counter(
        client,
        sidecars::CounterConfig {
            namespace: config.watch_namespace,
            lease: (lease_ns, lease_name, config.identity),
            every: COUNT_EVERY,
        },
        futures::future::pending::<()>(),
    ));
    Ok(serving)
}

/// A watch cache of every `K` the operator may see (its namespace, or all), fed in the
/// background and counted under `kind` in `facekey_operator_watch_errors_total`; ready once its
/// first list has arrived.
fn watched<K>(client: &Client, config: &WebhookConfig, kind: &'static str) -> server::Bounds<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + std::hash::Hash + Eq + Clone,
{
    let api: kube::Api<K> = match &config.watch_namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    let (store, writer) = reflector::store();
    tokio::spawn(
        crate::watching::counted(
            watcher(api, watcher::Config::default()).default_backoff(),
            (
                crate::watching::Component::Webhook,
                kind,
                config.metrics.watch_errors.clone(),
            ),
        )
        .reflect(writer)
        .touched_objects()
        .for_each(|_| futures::future::ready(())),
    );
    let synced = Arc::new(AtomicBool::new(false));
    mark_when_ready(store.clone(), synced.clone(), kind);
    server::Bounds::Watched(store, synced)
}

/// Set `synced` once `store` has its first list (in the background).
fn mark_when_ready<K>(store: reflector::Store<K>, synced: Arc<AtomicBool>, kind: &'static str)
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            synced.store(true, Ordering::Release);
            info!(kind, "webhook cache synced");
        }
    });
}
