//! `facekey-operator run`: the process around the reconciler — metrics/health server, leader
//! election, the kube-runtime Controller with watches on owned kinds (and on the ConfigMaps the
//! runtime pods mount), and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use facekey_crds::FaceKeyDeployment;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::decode::{Decoder, Report, UnknownFields};
use crate::error::ReadError;
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, error_policy};
use crate::server::{self, ServerState};
use crate::watching::{self, Component};
use crate::{CONTROLLER_NAME, Result, labels};

/// Most reconciles in flight at once (each makes ~20 API calls).
pub const RECONCILE_CONCURRENCY: u16 = 8;
/// Events for one resource within this window trigger one reconcile, not one each.
pub const RECONCILE_DEBOUNCE: Duration = Duration::from_secs(1);

/// What of the FaceKeyDeployment should trigger a reconcile: its spec (the generation), labels,
/// owner references and deletion, not its status, which is the operator's own output: without
/// this filter every status write would queue one more reconcile that applies nothing.
pub fn spec_or_ownership<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.meta().generation.hash(&mut h);
    hash_ownership(obj.meta(), &mut h);
    Some(h.finish())
}

/// What of an owned HPA or PDB should trigger a reconcile: its spec (hashed: an HPA has no
/// `metadata.generation` on API servers before 1.37, so a hand edit of `maxReplicas` would
/// change nothing [`spec_or_ownership`] sees), labels, owner references and deletion, not its
/// status (an HPA rewrites it with every metrics sync, a PDB with every pod change).
pub fn owned_spec_or_ownership<K: Resource + serde::Serialize>(obj: &K) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_value(obj)
        .ok()
        .and_then(|v| v.get("spec").map(ToString::to_string))
        .hash(&mut h);
    hash_ownership(obj.meta(), &mut h);
    h.finish()
}

/// The labels, deletion and owner references of `meta` into `h`: what both change filters
/// watch beside the spec.
fn hash_ownership(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    h: &mut impl std::hash::Hasher,
) {
    use std::hash::Hash;
    meta.labels.hash(h);
    meta.deletion_timestamp.is_some().hash(h);
    for owner in meta.owner_references.iter().flatten() {
        (&owner.uid, owner.controller).hash(h);
    }
}

/// `K` in namespace `ns`, or in every namespace.
fn scoped<K>(client: Client, ns: Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client, &ns),
        None => Api::all(client),
    }
}

/// What every watch of an owned kind shares: the client, the watched namespace, the operator's
/// labels (`cfg`) and the counter of watch errors.
struct OwnedWatches {
    client: Client,
    ns: Option<String>,
    cfg: watcher::Config,
    errors: prometheus::IntCounterVec,
}

impl OwnedWatches {
    /// An owned kind's watch as reconcile triggers, metadata only (any change of one triggers):
    /// in the watched namespace, by the operator's labels, on its own backoff with its errors
    /// counted under its kind ([`watching::counted`]).
    fn metadata<K>(
        &self,
    ) -> impl futures::Stream<Item = std::result::Result<PartialObjectMeta<K>, watcher::Error>>
    + Send
    + 'static
    where
        K: k8s_openapi::Resource + Send + Sync + 'static,
        PartialObjectMeta<K>: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        self.metadata_with::<K>(self.cfg.clone())
    }

    /// As [`OwnedWatches::metadata`], selecting with `cfg` instead of the operator's labels.
    fn metadata_with<K>(
        &self,
        cfg: watcher::Config,
    ) -> impl futures::Stream<Item = std::result::Result<PartialObjectMeta<K>, watcher::Error>>
    + Send
    + 'static
    where
        K: k8s_openapi::Resource + Send + Sync + 'static,
        PartialObjectMeta<K>: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let watch = watcher(
            scoped::<PartialObjectMeta<K>>(self.client.clone(), self.ns.clone()),
            cfg,
        );
        watching::counted(
            watch.default_backoff(),
            (Component::Controller, K::KIND, self.errors.clone()),
        )
        .touched_objects()
    }

    /// An owned kind whose status churns (HPA, PDB) as reconcile triggers: as
    /// [`OwnedWatches::metadata`], whole objects, of which only a deletion or a change
    /// [`owned_spec_or_ownership`] sees triggers ([`watching::changed_or_deleted`]).
    fn specs<K>(
        &self,
    ) -> impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
    where
        K: k8s_openapi::Resource
            + Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let watch = watcher(
            scoped::<K>(self.client.clone(), self.ns.clone()),
            self.cfg.clone(),
        );
        watching::changed_or_deleted(
            watching::counted(
                watch.default_backoff(),
                (Component::Controller, K::KIND, self.errors.clone()),
            ),
            owned_spec_or_ownership::<K>,
        )
    }
}

/// Settings of `facekey-operator run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Address of the metrics/health server.
    pub listen: SocketAddr,
    /// Image of the operator, used for scan Jobs' summary container.
    pub operator_image: String,
    /// Namespace of the leader Lease (the operator's own).
    pub lease_namespace: String,
    /// Name of the leader Lease.
    pub lease_name: String,
    /// Our identity in the Lease (pod name).
    pub identity: String,
    /// Lease duration; renewals happen every third of it.
    pub lease_duration: Duration,
    /// Namespace to watch, or all namespaces.
    pub watch_namespace: Option<String>,
    /// The scan policy floor and scanner settings every resource gets.
    pub policy: crate::policy_floor::ClusterPolicy,
    /// The metrics served on `/metrics` (shared with the webhook, which records its own).
    pub metrics: Metrics,
    /// The sidecar webhook when this process serves it ([`crate::webhook::start`]): `/readyz`
    /// waits for its certificate and its FaceKeyDeployment cache.
    pub webhook: Option<crate::webhook::Serving>,
    /// How long the process lives on after a stop (SIGTERM, or leadership lost) with `/readyz`
    /// failing ([`DRAIN_DELAY`] when it serves the webhook, else zero): the API server keeps
    /// sending admission reviews to a pod until its endpoint removal reaches it, and a webhook
    /// gone meanwhile admits pods without their sidecar (`failurePolicy: Ignore`).
    pub drain: Duration,
    /// How long a resource stays undecodable before its Event and status say so
    /// ([`UNDECODABLE_GRACE`]; tests shorten it).
    pub undecodable_grace: Duration,
}

/// The drain of a process serving the sidecar webhook: a few endpoint-propagation delays, well
/// within the pod's 30-second termination grace period.
pub const DRAIN_DELAY: Duration = Duration::from_secs(10);

/// The drain before exit: readiness fails from the stop on, and the process lasts until the
/// stop plus the delay.
struct Drain {
    ready: Arc<AtomicBool>,
    delay: Duration,
    since: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Drain {
    /// The stop: not ready from now on (the first call counts).
    fn begin(&self) {
        self.ready.store(false, Ordering::Relaxed);
        if let Ok(mut since) = self.since.lock() {
            since.get_or_insert_with(tokio::time::Instant::now);
        }
    }

    /// Wait out what is left of the delay since [`Drain::begin`].
    async fn finish(&self) {
        self.begin();
        let since = self.since.lock().ok().and_then(|s| *s);
        if let Some(since) = since
            && !self.delay.is_zero()
        {
            info!(
                seconds = self.delay.as_secs(),
                "draining: not ready, still answering"
            );
            tokio::time::sleep_until(since + self.delay).await;
        }
    }
}

/// Why the process stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT: graceful shutdown, Lease released.
    Signal,
    /// Leadership was lost: the caller should exit non-zero so the pod restarts as a standby.
    LostLeadership,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// How often the held-rollout gauge is recomputed from the controller's cache.
pub const HELD_REFRESH: Duration = Duration::from_secs(15);

/// How often [`held_rollouts`] asks whether the controller's cache has its first full list.
const CACHE_READY_POLL: Duration = Duration::from_secs(1);

/// Recompute `facekey_operator_rollout_held`, `facekey_operator_resource_degraded` and
/// `facekey_operator_running_image_vulnerable` from the
/// cached resources every [`HELD_REFRESH`] once the cache has its first full list: states read
/// from the statuses the operator wrote, so the alerts on them hold while the state does,
/// whichever replica leads and whenever Prometheus first scraped it (a counter born at 1 in a
/// new leader's first reconcile shows no increase). Series are set and the stale ones removed,
/// never all cleared at once (a scrape in between would see none), and a deleted resource's
/// series go. Each round also forgets the per-resource state ([`Context::forget`]) of every
/// resource gone from the cache: the watch's deletion event does so at once, but one deleted
/// while the watch was away (a relist reports no deletion, and no child's event need follow)
/// would otherwise keep it for the life of the process. A resource left out of the cache only
/// for a spec this operator cannot decode (`decoder`) still exists and keeps it.
fn held_rollouts(
    reader: reflector::Store<FaceKeyDeployment>,
    ctx: Arc<Context>,
    decoder: Arc<std::sync::Mutex<Decoder>>,
) -> tokio::task::JoinHandle<()> {
    let metrics = ctx.metrics.clone();
    tokio::spawn(async move {
        // Asked again every second: kube's `wait_until_ready` wakes only the last of several
        // waiters on one cache (its `DelayedInit` holds one oneshot receiver, which keeps one
        // waker), and the Controller waits on this cache too, after this task, so a single
        // wait here never ended and these gauges were never set.
        loop {
            match tokio::time::timeout(CACHE_READY_POLL, reader.wait_until_ready()).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        }
        let mut held = StateGauge::new(metrics.rollouts_held.clone());
        let mut degraded = StateGauge::new(metrics.resources_degraded.clone());
        let mut vulnerable = StateGauge::new(metrics.running_image_vulnerable.clone());
        loop {
            // What is kept first, the cache after: anything kept was kept for a resource that
            // was in the cache then, so one missing from the later cache was deleted since.
            let kept = ctx.tracked();
            let state = reader.state();
            let cached: std::collections::BTreeSet<(String, String)> = state
                .iter()
                .map(|fkd| (fkd.namespace().unwrap_or_default(), fkd.name_any()))
                .collect();
            for (namespace, name) in kept.difference(&cached) {
                let undecodable = decoder
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .undecodable(namespace, name)
                    .is_some();
                if !undecodable {
                    ctx.forget(namespace, name);
                }
            }
            held.set(state.iter().filter_map(|fkd| {
                let reason = crate::status::rollout_held(fkd.status.as_ref())?;
                Some([
                    fkd.namespace().unwrap_or_default(),
                    fkd.name_any(),
                    reason.to_owned(),
                ])
            }));
            degraded.set(state.iter().filter_map(|fkd| {
                let reason = crate::status::degraded(fkd.status.as_ref())?;
                Some([fkd.namespace().unwrap_or_default(), fkd.name_any(), reason])
            }));
            vulnerable.set(state.iter().filter_map(|fkd| {
                let reason = crate::status::running_image_vulnerable(fkd.status.as_ref())?;
                Some([
                    fkd.namespace().unwrap_or_default(),
                    fkd.name_any(),
                    reason.to_owned(),
                ])
            }));
            tokio::time::sleep(HELD_REFRESH).await;
        }
    })
}

/// A gauge vector of `namespace`, `name`, `reason` series at 1, kept equal to a set.
struct StateGauge {
    gauge: prometheus::IntGaugeVec,
    set: std::collections::BTreeSet<[String; 3]>,
}

impl StateGauge {
    fn new(gauge: prometheus::IntGaugeVec) -> Self {
        Self {
            gauge,
            set: std::collections::BTreeSet::new(),
        }
    }

    /// Set the series of `now` to 1 and remove the ones no longer in it.
    fn set(&mut self, now: impl Iterator<Item = [String; 3]>) {
        let now: std::collections::BTreeSet<[String; 3]> = now.collect();
        for [namespace, name, reason] in &now {
            self.gauge
                .with_label_values(&[namespace.as_str(), name.as_str(), reason.as_str()])
                .set(1);
        }
        for [namespace, name, reason] in self.set.difference(&now) {
            // Absent already is fine: nothing to remove.
            let _ = self.gauge.remove_label_values(&[
                namespace.as_str(),
                name.as_str(),
                reason.as_str(),
            ]);
        }
        self.set = now;
    }
}

/// How long a resource stays undecodable before its Event and status say so. An operator
/// upgrade applies the newer CRD (whose defaulted fields show on every stored object at once) a
/// little before the newer operator takes over: that moment must not mark every resource
/// Stalled. The log line and the gauge come at once; the alert waits 10 minutes.
pub const UNDECODABLE_GRACE: Duration = Duration::from_secs(120);

/// The task that acts on the decoder's reports, off the watch stream (which must not wait on
/// API calls): an undecodable resource still so at its generation after `grace`
/// ([`UNDECODABLE_GRACE`])
/// gets its Event and status (each in its own child, so one's retries do not hold up the next;
/// the children end with this task); a recovered one is sent to `recovered` for a reconcile.
fn undecodable_reporter(
    ctx: Arc<Context>,
    decoder: Arc<std::sync::Mutex<Decoder>>,
    grace: Duration,
    recovered: mpsc::UnboundedSender<ObjectRef<FaceKeyDeployment>>,
) -> (mpsc::UnboundedSender<Report>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let task = tokio::spawn(async move {
        let mut children = tokio::task::JoinSet::new();
        loop {
            let report = tokio::select! {
                report = rx.recv() => report,
                Some(_) = children.join_next(), if !children.is_empty() => continue,
            };
            let Some(report) = report else { break };
            match report {
                Report::Undecodable(u) => {
                    crate::events::SpecUndecodable {
                        object: &u.object,
                        reason: &u.reason,
                    }
                    .emit();
                    let (ctx, decoder) = (ctx.clone(), decoder.clone());
                    children.spawn(async move {
                        tokio::time::sleep(grace).await;
                        let still = || {
                            decoder
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .still_undecodable(&u.object, u.generation)
                        };
                        reconcile::report_undecodable(&ctx, &u, &still).await;
                    });
                }
                Report::StatusDropped { object, reason } => crate::events::StatusUnreadable {
                    object: &object,
                    reason: &reason,
                }
                .emit(),
                Report::Recovered { namespace, name } => {
                    let _ = recovered.send(ObjectRef::new(&name).within(&namespace));
                }
            }
        }
    });
    (tx, task)
}

/// The cached resources of `config_map`'s namespace whose runtime pods mount it
/// ([`crate::desired::mounts_config_map`]).
fn resources_mounting(
    cache: &reflector::Store<FaceKeyDeployment>,
    config_map: &PartialObjectMeta<ConfigMap>,
) -> Vec<ObjectRef<FaceKeyDeployment>> {
    let (namespace, name) = (config_map.namespace(), config_map.name_any());
    cache
        .state()
        .iter()
        .filter(|fkd| {
            fkd.namespace() == namespace && crate::desired::mounts_config_map(&fkd.spec, &name)
        })
        .map(|fkd| ObjectRef::from_obj(fkd.as_ref()))
        .collect()
}

/// Run until SIGTERM/SIGINT or lost leadership, with the in-cluster or kubeconfig client.
pub async fn run(config: RunConfig) -> Result<Exit> {
    let client = crate::client::infer()
        .await
        .map_err(ReadError::of("kubeconfig / in-cluster configuration"))?;
    run_with(client, config, shutdown_signal()).await
}

/// Run with `client` until `shutdown` resolves or leadership is lost (tests inject both).
pub async fn run_with(
    client: Client,
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Exit> {
    // Several places wait for the shutdown trigger: share it.
    let (sig_tx, sig_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = sig_tx.send(true);
    });
    let signalled = move || {
        let mut rx = sig_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let metrics = config.metrics.clone();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);

    let server_state = ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        webhook: config.webhook.clone(),
    };
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(server::serve(config.listen, server_state, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    ready.store(true, Ordering::Relaxed);
    let drain = Arc::new(Drain {
        ready: ready.clone(),
        delay: config.drain,
        since: std::sync::Mutex::new(None),
    });

    let elector = Arc::new(LeaderElector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        &config.identity,
        config.lease_duration,
    ));
    let renew_every = config.lease_duration / 3;

    // Standby until we hold the Lease (or are told to stop).
    let signal = signalled();
    tokio::pin!(signal);
    let won_at = loop {
        let started = tokio::time::Instant::now();
        match elector.step(Timestamp::now()).await {
            Ok(true) => break started,
            Ok(false) => {}
            Err(e) => warn!(error = %e, "leader election step failed"),
        }
        tokio::select! {
            () = &mut signal => {
                drain.finish().await;
                let _ = stop_tx.send(true);
                let _ = server.await;
                return Ok(Exit::Signal);
            }
            () = tokio::time::sleep(renew_every) => {}
        }
    };
    info!(identity = elector.identity(), "acquired leadership");
    metrics.leader.set(1);

    // Keep renewing. No renewal within the renew deadline (shorter than the lease) means we
    // stop leading before a standby may take over; reconciles check `leading` before each write.
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let (leading_tx, leading_rx) = watch::channel(true);
    let renewer = {
        let elector = elector.clone();
        tokio::spawn(async move {
            let lost = elector.hold(won_at).await;
            warn!(reason = ?lost, "leadership lost");
            let _ = leading_tx.send(false);
            let _ = lost_tx.send(true);
        })
    };

    let ctx = Arc::new(
        Context::new(
            client.clone(),
            metrics.clone(),
            config.operator_image.clone(),
            Some(config.identity.clone()),
        )
        .with_policy(config.policy.clone())
        .with_leadership(leading_rx),
    );
    // The resources are watched untyped and decoded one by one (crate::decode): one object this
    // operator cannot read must not stop the reconciles of every other.
    let fkd_api = crate::decode::api(client.clone(), config.watch_namespace.as_deref());
    let exit = Arc::new(std::sync::Mutex::new(Exit::Signal));
    let exit_on_loss = exit.clone();
    let stop_drain = drain.clone();
    // The resource's own status writes do not come back as reconciles (see spec_or_ownership).
    let (reader, writer) = reflector::store();
    let decoder = Arc::new(std::sync::Mutex::new(Decoder::new(UnknownFields::Reject)));
    let (recovered_tx, mut recovered_rx) = mpsc::unbounded_channel();
    let (reports, reporter) = undecodable_reporter(
        ctx.clone(),
        decoder.clone(),
        config.undecodable_grace,
        recovered_tx,
    );
    let held = held_rollouts(reader.clone(), ctx.clone(), decoder.clone());
    let undecodable_gauge = metrics.undecodable.clone();
    // A resource deleted while the watch runs: its per-resource state goes at once (one deleted
    // while the watch was away, which a relist does not report, goes at the next sweep of
    // `held_rollouts`).
    let forget_deleted = ctx.clone();
    // Every watch on its own backoff, its errors counted and kept from the Controller (which
    // would back all triggers off together: crate::watching).
    let owned = OwnedWatches {
        client: client.clone(),
        ns: config.watch_namespace.clone(),
        // Only objects carrying our managed-by label are cached, not every Deployment in the
        // cluster.
        cfg: watcher::Config::default().labels(&format!(
            "app.kubernetes.io/managed-by={CONTROLLER_NAME},app.kubernetes.io/name={}",
            labels::APP_NAME
        )),
        errors: metrics.watch_errors.clone(),
    };
    let primary = watching::counted(
        watcher(fkd_api, watcher::Config::default()).default_backoff(),
        (
            Component::Controller,
            "FaceKeyDeployment",
            owned.errors.clone(),
        ),
    )
    .map_ok(move |event| {
        if let watcher::Event::Delete(obj) = &event {
            forget_deleted.forget(&obj.namespace().unwrap_or_default(), &obj.name_any());
        }
        let mut decoder = decoder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (event, found) = decoder.event(event);
        undecodable_gauge.set(i64::try_from(decoder.undecodable_count()).unwrap_or(i64::MAX));
        for report in found {
            // The reporter ends only with the process.
            let _ = reports.send(report);
        }
        event
    })
    .reflect(writer)
    .applied_objects()
    .predicate_filter(spec_or_ownership, Default::default());
    // The user's ConfigMaps the runtime pods mount (score weights, spoof model) are part of the
    // pod template's config hash (the runtime reads them only at start-up): a change of one
    // reconciles the resources mounting it at once, not at the next periodic requeue. They
    // carry no label of the operator's, so every ConfigMap of the watched namespaces is
    // watched, metadata only (a change of the data moves the resourceVersion, so it shows).
    let mounting = reader.clone();
    let mounted_config_maps = owned.metadata_with::<ConfigMap>(watcher::Config::default());
    let controller = Controller::for_stream(primary, reader)
        // At most RECONCILE_CONCURRENCY reconciles in flight; bursts of events for one object
        // (a child's status updated several times in a row) collapse into one reconcile.
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(RECONCILE_CONCURRENCY)
                .debounce(RECONCILE_DEBOUNCE),
        )
        .owns_stream(owned.metadata::<Deployment>())
        .owns_stream(owned.metadata::<Service>())
        .owns_stream(owned.metadata::<ConfigMap>())
        // HPA and PDB status churn (metrics syncs, pod changes) does not trigger reconciles;
        // their deletion and any change of their spec does.
        .owns_stream(owned.specs::<HorizontalPodAutoscaler>())
        .owns_stream(owned.specs::<PodDisruptionBudget>())
        .owns_stream(owned.metadata::<Job>())
        .watches_stream(mounted_config_maps, move |cm| {
            resources_mounting(&mounting, &cm)
        })
        // A resource decodable again at an unchanged generation passes the change filter
        // unseen: the decoder asks for its reconcile.
        .reconcile_on(futures::stream::poll_fn(move |cx| {
            recovered_rx.poll_recv(cx)
        }))
        .graceful_shutdown_on(async move {
            tokio::select! {
                () = signalled() => {
                    info!("shutdown requested");
                    stop_drain.begin();
                }
                _ = lost_rx.wait_for(|l| *l) => {
                    stop_drain.begin();
                    error!("leadership lost; stopping reconciles");
                    if let Ok(mut e) = exit_on_loss.lock() {
                        *e = Exit::LostLeadership;
                    }
                }
            }
        })
        .run(reconcile::reconcile, error_policy, ctx);
    controller
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "controller event");
            }
        })
        .await;

    renewer.abort();
    reporter.abort();
    held.abort();
    metrics.leader.set(0);
    metrics.undecodable.set(0);
    metrics.rollouts_held.reset();
    metrics.resources_degraded.reset();
    let exit = exit.lock().map(|e| *e).unwrap_or(Exit::Signal);
    if exit == Exit::Signal
        && let Err(e) = elector.release().await
    {
        warn!(error = %e, "releasing the Lease failed; a standby takes over after expiry");
    }
    drain.finish().await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(exit)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn hpa() -> HorizontalPodAutoscaler {
        let mut h = HorizontalPodAutoscaler::default();
        h.metadata.generation = Some(1);
        h.metadata.labels = Some([("app".to_owned(), "fk".to_owned())].into());
        h.metadata.owner_references = Some(vec![OwnerReference {
            uid: "u1".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        h
    }

    #[test]
    fn status_churn_is_filtered_spec_and_ownership_changes_are_not() {
        let base = spec_or_ownership(&hpa());
        let mut status_only = hpa();
        status_only.status = Some(HorizontalPodAutoscalerStatus {
            current_replicas: Some(7),
            desired_replicas: 9,
            ..HorizontalPodAutoscalerStatus::default()
        });
        status_only.metadata.resource_version = Some("42".into());
        assert_eq!(spec_or_ownership(&status_only), base);

        let mut spec = hpa();
        spec.metadata.generation = Some(2);
        assert_ne!(spec_or_ownership(&spec), base);
        let mut relabelled = hpa();
        relabelled.metadata.labels = None;
        assert_ne!(spec_or_ownership(&relabelled), base);
        let mut orphaned = hpa();
        orphaned.metadata.owner_references = None;
        assert_ne!(spec_or_ownership(&orphaned), base);
    }

    /// Owned HPAs and PDBs are compared by their spec: an HPA carries no generation on API
    /// servers before 1.37, so a hand edit shows only there.
    #[test]
    fn owned_objects_are_compared_by_spec_not_generation() {
        let mut plain = hpa();
        plain.metadata.generation = None;
        let base = owned_spec_or_ownership(&plain);
        let mut status_only = plain.clone();
        status_only.status = Some(HorizontalPodAutoscalerStatus {
            current_replicas: Some(7),
            desired_replicas: 9,
            ..HorizontalPodAutoscalerStatus::default()
        });
        status_only.metadata.resource_version = Some("42".into());
        assert_eq!(owned_spec_or_ownership(&status_only), base);
        let mut edited = plain.clone();
        edited.spec = Some(
            k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerSpec {
                max_replicas: 50,
                ..Default::default()
            },
        );
        assert_ne!(
            owned_spec_or_ownership(&edited),
            base,
            "a spec edit without a generation"
        );
        assert_eq!(
            spec_or_ownership(&edited),
            spec_or_ownership(&plain),
            "what the generation-based filter missed"
        );
        let mut orphaned = plain.clone();
        orphaned.metadata.owner_references = None;
        assert_ne!(owned_spec_or_ownership(&orphaned), base);
    }
}
