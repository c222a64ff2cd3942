//! One reconcile of one FaceKeyDeployment, in named stages:
//! observe → validate → scan gate → desired state (pure) → apply → prune → status and Events.
//!
//! [`reconcile`] is what the controller runs; tests call it directly against an in-memory API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use facekey_crds::{FaceKeyDeployment, FaceKeyDeploymentStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use crate::capabilities::CapabilityCache;
use crate::desired::{
    self, Capabilities, ChildKind, Desired, DesiredInputs, GeneratedContent, OptionalCrd,
    RUNTIME_PORT, StoreState,
};
use crate::error::{
    ApplyError, DesiredError, MissingField, ObserveError, PruneError, ReadError, ScanGateError,
    StatusError,
};
use crate::events::{
    ApiKeyCreated, EventSpec, Pruned, ReconcileFailed, Reconciled, RolloutBlocked, ScanJobCreated,
    ScanVerdict, TemplateKeyCreated,
};
use crate::metrics::Metrics;
use crate::policy_floor::ClusterPolicy;
use crate::scan_gate::{self, GateInputs, GateResult};
use crate::status::{self, ApplyOutcome, DatabaseHealth, GateState, Observed};
use crate::validate::{self, InvalidSpec};
use crate::{CONTROLLER_NAME, Error, FIELD_MANAGER, Result, apply, labels};

/// Requeue interval when nothing is in flight: periodic drift repair for kinds without watches.
pub const STEADY_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue interval while a rollout is in progress.
pub const ROLLOUT_REQUEUE: Duration = Duration::from_secs(30);

/// Source of the current time; tests pin it so recorded reports have a fixed age.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Shared state of all reconciles.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Operator metrics.
    pub metrics: Metrics,
    /// Event publisher.
    pub recorder: Recorder,
    /// Optional-CRD discovery cache.
    pub capabilities: CapabilityCache,
    /// Image of the operator itself (runs the summary container of scan Jobs).
    pub operator_image: String,
    /// The cluster's scan policy floor and scanner settings (the operator's flags).
    pub policy: ClusterPolicy,
    /// Current time.
    pub clock: Clock,
    /// Consecutive failures per object, for the error policy's backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Whether this replica still holds the leader Lease (`None`: no election, e.g. tests and
    /// `render`). Checked before every stage that writes.
    leading: Option<tokio::sync::watch::Receiver<bool>>,
    /// How long one reconcile may take ([`RECONCILE_TIMEOUT`]; tests shorten it).
    reconcile_timeout: Duration,
}

/// The longest one reconcile may take before it is abandoned and retried with backoff. An API
/// server that takes a request and never answers (a stalled apiserver, a half-open connection
/// through a load balancer) would otherwise hold the reconcile, and one of its
/// RECONCILE_CONCURRENCY slots, until the client's read timeout (`client::READ_TIMEOUT`, almost
/// 5 minutes; a client built elsewhere may have none). A healthy reconcile takes milliseconds to
/// a few seconds.
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest publishing one Event may take: Events are best effort and must not outlive a
/// failed reconcile by long.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

impl Context {
    /// A context with the real clock and a 60-second capability cache.
    pub fn new(
        client: Client,
        metrics: Metrics,
        operator_image: String,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER_NAME.to_owned(),
                instance,
            },
        );
        Self {
            capabilities: CapabilityCache::new(client.clone()),
            client,
            metrics,
            recorder,
            operator_image,
            policy: ClusterPolicy::default(),
            clock: Arc::new(Timestamp::now),
            failures: Mutex::new(HashMap::new()),
            leading: None,
            reconcile_timeout: RECONCILE_TIMEOUT,
        }
    }

    /// Follow leadership: once `leading` turns false, reconciles stop before their next write.
    #[must_use]
    pub fn with_leadership(mut self, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        self.leading = Some(leading);
        self
    }

    /// `Err(NotLeader)` once the Lease is lost, so no write follows a lost election.
    pub fn ensure_leading(&self) -> Result<()> {
        match &self.leading {
            Some(rx) if !*rx.borrow() => Err(Error::NotLeader),
            _ => Ok(()),
        }
    }

    /// Replace the reconcile timeout (default [`RECONCILE_TIMEOUT`]; tests shorten it).
    #[must_use]
    pub fn with_reconcile_timeout(mut self, timeout: Duration) -> Self {
        self.reconcile_timeout = timeout;
        self
    }

    /// Replace the clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Replace the scan policy floor and scanner settings (default: [`ClusterPolicy::default`]).
    #[must_use]
    pub fn with_policy(mut self, policy: ClusterPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Replace the capability cache (tests use a zero TTL).
    #[must_use]
    pub fn with_capabilities(mut self, capabilities: CapabilityCache) -> Self {
        self.capabilities = capabilities;
        self
    }

    fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn reset_failures(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }

    /// Consecutive failures recorded for `key` (`namespace/name`).
    pub fn failures(&self, key: &str) -> u32 {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(key).copied().unwrap_or(0)
    }

    /// Forget what this process keeps per resource for `namespace/name`, a FaceKeyDeployment
    /// that no longer exists: its `facekey_operator_blocked_rollouts_total` series and its
    /// failure count. The controller calls it when it sees the resource gone (its watch's
    /// deletion event, and a periodic sweep against its cache for deletions the watch missed);
    /// without it every deleted resource left its series on `/metrics` (listed by dashboards
    /// and alerts as if it still existed) and its entries in memory for the life of the
    /// process. The held, degraded and vulnerable gauges are recomputed from the cache and lose
    /// a deleted resource's series in the same sweep ([`crate::controller`]).
    pub fn forget(&self, namespace: &str, name: &str) {
        // Absent already (never reconciled here, or forgotten before) is fine.
        let _ = self
            .metrics
            .blocked_rollouts
            .remove_label_values(&[namespace, name]);
        self.reset_failures(&format!("{namespace}/{name}"));
    }

    /// The resources (`namespace`, `name`) this process keeps state for ([`Context::forget`]):
    /// a `facekey_operator_blocked_rollouts_total` series or a failure count.
    pub fn tracked(&self) -> std::collections::BTreeSet<(String, String)> {
        let mut tracked = std::collections::BTreeSet::new();
        for family in prometheus::core::Collector::collect(&self.metrics.blocked_rollouts) {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                };
                if let (Some(namespace), Some(name)) = (label("namespace"), label("name")) {
                    tracked.insert((namespace, name));
                }
            }
        }
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        tracked.extend(failures.keys().filter_map(|key| {
            key.split_once('/')
                .map(|(namespace, name)| (namespace.to_owned(), name.to_owned()))
        }));
        tracked
    }
}

fn key(fkd: &FaceKeyDeployment) -> String {
    format!("{}/{}", fkd.namespace().unwrap_or_default(), fkd.name_any())
}

/// Reconcile one FaceKeyDeployment: the controller's reconcile function.
pub async fn reconcile(fkd: Arc<FaceKeyDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.duration.start_timer();
    // The scan gate's counter of this resource exists at 0 from its first reconcile, so an
    // increase() over it shows the first blocked image too (a series born at 1 shows none).
    if fkd.meta().deletion_timestamp.is_none() {
        ctx.metrics.blocked_rollouts.with_label_values(&[
            fkd.namespace().unwrap_or_default().as_str(),
            fkd.name_any().as_str(),
        ]);
    }
    let result =
        match tokio::time::timeout(ctx.reconcile_timeout, reconcile_stages(&fkd, &ctx)).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(&fkd, &ctx).await),
        };
    timer.observe_duration();
    let object = key(&fkd);
    match &result {
        Ok(action) => {
            Reconciled {
                object: &object,
                action,
            }
            .emit(&ctx.metrics);
            ctx.reset_failures(&object);
        }
        Err(error) => {
            let failed = ReconcileFailed {
                object: &object,
                error,
            };
            failed.emit(&ctx.metrics);
            publish(&ctx, &fkd, &failed.event()).await;
        }
    }
    result
}

/// Error policy: jittered exponential backoff per object ([`retry_delay`]: 5 s doubling to
/// 5 min); errors that retrying cannot fix never loop: an invalid spec waits for the next change,
/// a request the API server refused (400, 403, 422, …; the `Degraded` condition says which) is
/// retried only at the steady interval.
pub fn error_policy(fkd: Arc<FaceKeyDeployment>, err: &Error, ctx: Arc<Context>) -> Action {
    if err.is_permanent() {
        return Action::await_change();
    }
    if err.is_refused() {
        return Action::requeue(STEADY_REQUEUE);
    }
    let object = key(&fkd);
    let n = ctx.record_failure(&object);
    Action::requeue(retry_delay(&object, n))
}

/// [`backoff`] spread by ±25 %, the same for a given object and failure count (so many objects
/// failing together, e.g. while the API server is away, do not retry in lock-step).
pub fn retry_delay(object: &str, failures: u32) -> Duration {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{object}#{failures}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits of the hash as a fraction in [0, 1).
    let unit = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    backoff(failures).mul_f64(0.75 + 0.5 * unit)
}

/// Delay before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_secs(secs.min(300))
}

/// The reconcile of `fkd` timed out: say so in its conditions when the API server takes that
/// write (the call that hung may have been another kind's, e.g. behind a stalled admission
/// webhook), within [`EVENT_TIMEOUT`].
async fn timed_out(fkd: &FaceKeyDeployment, ctx: &Context) -> Error {
    let e = Error::Timeout {
        after: ctx.reconcile_timeout,
    };
    if ctx.ensure_leading().is_ok() {
        match tokio::time::timeout(EVENT_TIMEOUT, write_timeout_conditions(ctx, fkd, &e)).await {
            Ok(Ok(())) => {}
            Ok(Err(w)) => {
                warn!(object = %key(fkd), error = %w, "writing the conditions of a timed-out reconcile failed")
            }
            Err(_) => {
                warn!(object = %key(fkd), "writing the conditions of a timed-out reconcile got no answer")
            }
        }
    }
    e
}

/// Field manager of the conditions a timed-out reconcile writes ([`write_timeout_conditions`]).
pub const TIMEOUT_FIELD_MANAGER: &str = "facekey-operator-timeout";

/// `observedGeneration` and the conditions of a timed-out reconcile, built on the status as
/// stored now and applied under [`TIMEOUT_FIELD_MANAGER`], never the rest of the status. The
/// reconcile's own status write may have landed with its answer lost (a half-open connection):
/// the status it read at its start is older, and applying that under the operator's manager
/// would take back the new `currentImage`, `lastKnownGoodImage` and scans, rolling the runtime
/// back at the next reconcile.
async fn write_timeout_conditions(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    e: &Error,
) -> Result<(), kube::Error> {
    let (Some(name), Some(namespace)) = (fkd.meta().name.clone(), fkd.namespace()) else {
        return Ok(());
    };
    let api = crate::decode::api(ctx.client.clone(), Some(&namespace));
    let live = api.get(&name).await?;
    let stored: Option<FaceKeyDeploymentStatus> = live
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let new = status::observe_failure(
        stored.as_ref(),
        fkd.meta().generation,
        e.category(),
        &e.to_string(),
        e.is_refused(),
        (ctx.clock)(),
    );
    api.patch_status(
        &name,
        &PatchParams::apply(TIMEOUT_FIELD_MANAGER).force(),
        &Patch::Apply(&conditions_patch(&new)),
    )
    .await?;
    Ok(())
}

/// A status server-side apply of `status`'s `observedGeneration` and conditions alone, for a
/// field manager of its own: the rest of the status stays the operator's.
fn conditions_patch(status: &FaceKeyDeploymentStatus) -> serde_json::Value {
    json!({
        "apiVersion": FaceKeyDeployment::api_version(&()),
        "kind": FaceKeyDeployment::kind(&()),
        "status": {"observedGeneration": status.observed_generation, "conditions": status.conditions},
    })
}

async fn publish(ctx: &Context, fkd: &FaceKeyDeployment, ev: &EventSpec) {
    let kube_event = ev.to_kube();
    let reference = fkd.object_ref(&());
    match tokio::time::timeout(EVENT_TIMEOUT, ctx.recorder.publish(&kube_event, &reference)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(object = %key(fkd), error = %e, "publishing event failed"),
        Err(_) => {
            warn!(object = %key(fkd), after = ?EVENT_TIMEOUT, "publishing event got no answer")
        }
    }
}

/// What the observe stage found: the resource's identity, the cluster's optional CRDs and the
/// live runtime Deployment.
struct Observation<'a> {
    name: &'a str,
    namespace: String,
    uid: String,
    /// `namespace/name`, for log lines.
    key: String,
    now: Timestamp,
    capabilities: Capabilities,
    live: Option<Deployment>,
    /// The CloudNativePG Cluster's status, when the store is one and the Cluster exists.
    database: Option<DatabaseHealth>,
    /// What the pods read of the user's ConfigMaps they mount (weights, spoof model).
    mounted: desired::MountedConfig,
    selector: String,
    url: String,
}

impl Observation<'_> {
    /// The live Deployment if this resource controls it. A foreign one of the same name (another
    /// team's, or left by `kubectl delete --cascade=orphan`) is only a conflict: its image is
    /// never reported as `currentImage`, so it never becomes the last-known-good image that the
    /// webhook injects and a held rollout falls back to.
    fn own_deployment(&self) -> Option<&Deployment> {
        self.live
            .as_ref()
            .filter(|d| apply::controlled_by(d.metadata.owner_references.as_ref(), &self.uid))
    }
}

/// The stages in order. Apply and prune failures are still reported in the status before the
/// reconcile fails with them.
async fn reconcile_stages(fkd: &FaceKeyDeployment, ctx: &Context) -> Result<Action> {
    if fkd.meta().deletion_timestamp.is_some() {
        // Children carry owner references: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let seen = match observe(ctx, fkd).await {
        Ok(seen) => seen,
        Err(e) => {
            let e = Error::from(e);
            ctx.ensure_leading()?;
            // The status says why; a status that cannot be written either leaves the error
            // this reconcile returns as it was (the status write's own is logged).
            if let Err(w) = write_observe_failure(ctx, fkd, &e).await {
                tracing::warn!(error = %w, "writing the status of a failed observation failed");
            }
            return Err(e);
        }
    };
    // A name that cannot produce valid child names (the CRD's CEL rule, for servers without it).
    if let Err(invalid) = validate::validate_name(seen.name) {
        ctx.ensure_leading()?;
        write_invalid_status(ctx, fkd, &seen, &invalid).await?;
        return Err(invalid.into());
    }
    // The spec's own rules and the cluster's scan policy floor; the gate reads the resolved spec.
    if let Err(invalid) = ctx.policy.validate(&fkd.spec) {
        ctx.ensure_leading()?;
        write_invalid_status(ctx, fkd, &seen, &invalid).await?;
        return Err(invalid.into());
    }
    // Every stage from here may write (scan Jobs, children, pruning, status): each checks first
    // that this replica still leads.
    ctx.ensure_leading()?;
    let gate = match check_gate(ctx, &ctx.policy.resolve(fkd), &seen).await {
        Ok(gate) => gate,
        Err(e) => {
            // A scan Job the API server refuses (a quota, an admission policy) or a report it
            // will not list: reported in the status like an apply failure, so observedGeneration
            // and Degraded say why instead of Progressing forever. A recorded verdict that closed
            // the gate stays in force: one failed call must not turn it into a pending scan, or
            // its return would count and announce the blocked rollout again.
            let e = Error::from(e);
            ctx.ensure_leading()?;
            let outcome = ApplyOutcome::of(Some(&e));
            let gate = held_or_pending(fkd, format!("the scan gate could not run: {e}"));
            write_early_status(ctx, fkd, &seen, &outcome, &gate).await?;
            return Err(e);
        }
    };
    let desired = desired_state(fkd, &seen, &gate)?;
    ctx.ensure_leading()?;
    // The children that exist, read once for the ownership check and the pruner.
    let inventory = apply::inventory(&ctx.client, &seen.namespace, seen.name, &seen.capabilities)
        .await
        .map_err(ApplyError::from);
    let applied = match inventory {
        Ok(inventory) => match create_generated(ctx, fkd, &seen, &desired).await {
            Ok(()) => {
                ctx.ensure_leading()?;
                apply_desired(ctx, &seen, &desired, &inventory)
                    .await
                    .map(|d| (d, inventory))
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let (deployment, failure) = match applied {
        // A refused store object (claim, CloudNativePG Cluster) stopped nothing else: every other
        // desired object exists, so pruning runs; the refusal is what the status reports.
        Ok((applied, inventory)) => {
            ctx.ensure_leading()?;
            let pruned = prune_leftovers(ctx, fkd, &seen, &gate, &desired, &inventory).await;
            let deployment = applied
                .deployment
                .or_else(|| seen.own_deployment().cloned());
            let failure = match (applied.refused_store, pruned) {
                (Some(refused), Err(e)) => {
                    warn!(object = %seen.key, error = %e, "pruning failed beside a refused store object");
                    Some(refused.into())
                }
                (Some(refused), Ok(())) => Some(refused.into()),
                (None, pruned) => pruned.err().map(Error::from),
            };
            (deployment, failure)
        }
        // A failed apply skips pruning: not every desired object exists yet.
        Err(e) => (seen.own_deployment().cloned(), Some(e.into())),
    };
    let outcome = ApplyOutcome::of(failure.as_ref());
    let observed = seen.status_input(fkd, &gate, &desired, deployment.as_ref(), &outcome);
    ctx.ensure_leading()?;
    write_status(ctx, fkd, &observed).await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(Action::requeue(next_requeue(&gate, deployment.as_ref()))),
    }
}

/// Observe stage: identity, optional CRDs (cached), the live Deployment with its image, the
/// CloudNativePG Cluster's health and what the pods read of the ConfigMaps they mount.
async fn observe<'a>(
    ctx: &Context,
    fkd: &'a FaceKeyDeployment,
) -> Result<Observation<'a>, ObserveError> {
    let missing = |field| MissingField {
        kind: "FaceKeyDeployment",
        field,
    };
    let name = desired::instance_name(fkd)?;
    let namespace = fkd.namespace().ok_or(missing("metadata.namespace"))?;
    let uid = fkd.uid().ok_or(missing("metadata.uid"))?;
    let now = (ctx.clock)();
    let capabilities = ctx.capabilities.get().await?;
    let live = Api::<Deployment>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(name)
        .await
        .map_err(ReadError::of(format!("Deployment {namespace}/{name}")))?;
    let database = observe_database(ctx, fkd, name, &namespace, &capabilities).await;
    let mounted = observe_mounted_config(ctx, fkd, &namespace).await?;
    Ok(Observation {
        database,
        mounted,
        selector: labels::selector_string(&labels::selector_labels(name)),
        url: format!("http://{name}.{namespace}.svc:{RUNTIME_PORT}"),
        key: format!("{namespace}/{name}"),
        now,
        name,
        namespace,
        uid,
        capabilities,
        live,
    })
}

/// What the runtime pods read of the user's ConfigMaps they mount
/// ([`desired::mounted_config_maps`]: score weights, spoof model), for the config hash: the
/// runtime reads them only at start-up, so a change must roll the pods. A missing one counts as
/// such ([`desired::MountedConfigMap::digest`]). A failed read fails the observation: taking it
/// for missing would roll the pods for nothing.
async fn observe_mounted_config(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    namespace: &str,
) -> Result<desired::MountedConfig, ReadError> {
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
    let mut read: std::collections::BTreeMap<String, Option<ConfigMap>> =
        std::collections::BTreeMap::new();
    let mut mounted = desired::MountedConfig::default();
    for m in desired::mounted_config_maps(&fkd.spec) {
        if !read.contains_key(&m.name) {
            let found = api
                .get_opt(&m.name)
                .await
                .map_err(ReadError::of(format!("ConfigMap {namespace}/{}", m.name)))?;
            read.insert(m.name.clone(), found);
        }
        let found = read.get(&m.name).and_then(Option::as_ref);
        mounted.0.insert(m.id(), m.digest(found));
    }
    Ok(mounted)
}

/// The CloudNativePG Cluster's status, for a `cloudNativePG` store whose Cluster exists. Best
/// effort: it only informs the `PersistentStore` condition, so a failed read leaves it out.
async fn observe_database(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    name: &str,
    namespace: &str,
    capabilities: &Capabilities,
) -> Option<DatabaseHealth> {
    let store = desired::store_state(
        name,
        &fkd.spec,
        capabilities.has(OptionalCrd::CloudNativePgCluster),
    );
    let StoreState::CloudNativePg { cluster } = store else {
        return None;
    };
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        namespace,
        &ChildKind::PostgresCluster.api_resource(),
    );
    match api.get_opt(&cluster).await {
        Ok(found) => found.map(|c| {
            let asked = fkd
                .spec
                .store
                .as_ref()
                .and_then(|s| s.postgres.as_ref())
                .and_then(|p| p.cloud_native_pg.as_ref())
                .and_then(|c| c.synchronous_replicas);
            DatabaseHealth::of(&c.data).asking_synchronous(asked)
        }),
        Err(e) => {
            tracing::debug!(error = %e, %cluster, "CloudNativePG Cluster status not read");
            None
        }
    }
}

/// Scan gate stage: may `spec.image` run? Starts a scan Job when a report is needed.
async fn check_gate(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    seen: &Observation<'_>,
) -> Result<GateResult, ScanGateError> {
    let gate = scan_gate::run(&GateInputs {
        client: &ctx.client,
        fkd,
        name: seen.name,
        namespace: &seen.namespace,
        capabilities: &seen.capabilities,
        operator_image: &ctx.operator_image,
        now: seen.now,
    })
    .await?;
    if let Some((job, image)) = &gate.created_job {
        ScanJobCreated {
            object: &seen.key,
            namespace: &seen.namespace,
            job,
            image,
        }
        .emit(&ctx.metrics);
    }
    Ok(gate)
}

/// Desired-state stage (pure): the runtime runs the last-known-good image — the one admitted for
/// `spec.image` when the gate is open (by digest), else the last one admitted before — never
/// whatever the live Deployment happens to run (a hand edit is reverted).
fn desired_state(
    fkd: &FaceKeyDeployment,
    seen: &Observation<'_>,
    gate: &GateResult,
) -> Result<Desired, DesiredError> {
    let mut desired = desired::compute(&DesiredInputs {
        fkd,
        runtime_image: gate.last_known_good.as_deref(),
        capabilities: &seen.capabilities,
        mounted_config: Some(&seen.mounted),
    })?;
    let missing = desired::hold_config_hash(&mut desired, seen.own_deployment(), &seen.mounted);
    if !missing.is_empty() {
        tracing::warn!(
            object = %seen.key,
            missing = ?missing,
            "a ConfigMap the runtime pods mount is missing (or lacks the key they read): the \
             running pods keep going, new ones cannot start until it is back"
        );
    }
    Ok(desired)
}

/// First part of the apply stage: Secrets with generated content (the template key, the API keys)
/// that do not exist yet are created, before any pod could mount them. No key is ever logged.
async fn create_generated(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    seen: &Observation<'_>,
    desired: &Desired,
) -> Result<(), ApplyError> {
    let created = apply::create_generated_secrets(&ctx.client, &seen.namespace, desired).await?;
    for generated in created {
        let (object, secret) = (seen.key.as_str(), generated.name.as_str());
        let event = match generated.content {
            GeneratedContent::TemplateKey => {
                let event = TemplateKeyCreated { object, secret };
                event.emit();
                event.event()
            }
            GeneratedContent::ApiKeys => {
                let event = ApiKeyCreated { object, secret };
                event.emit();
                event.event()
            }
        };
        publish(ctx, fkd, &event).await;
    }
    Ok(())
}

/// Apply stage: every desired object, in order; returns what was applied ([`apply::Applied`]).
async fn apply_desired(
    ctx: &Context,
    seen: &Observation<'_>,
    desired: &Desired,
    inventory: &apply::Inventory,
) -> Result<apply::Applied, ApplyError> {
    let live = seen.live.as_ref();
    let foreign = apply::not_owned(
        &ctx.client,
        &seen.namespace,
        seen.name,
        &seen.uid,
        desired,
        live,
        inventory,
    )
    .await?;
    if foreign.is_empty() {
        apply::hand_over_replicas(&ctx.client, &seen.namespace, desired, live).await?;
        return apply::apply_all(&ctx.client, &seen.namespace, desired).await;
    }
    // Everything else is applied; the foreign objects are not, nor an HPA that would scale a
    // foreign Deployment, nor the Deployment (and its HPA) when the store's claim or Cluster is
    // someone else's: its pods would mount that claim or connect to that database.
    // A predecessor's objects (a resource of this name deleted and created again) are left to
    // the garbage collector the same way, and retried soon rather than reported as a conflict.
    let store_foreign = foreign.iter().any(|(k, _, _)| {
        matches!(
            k,
            ChildKind::PersistentVolumeClaim | ChildKind::PostgresCluster
        )
    });
    let deployment_foreign =
        store_foreign || foreign.iter().any(|(k, _, _)| *k == ChildKind::Deployment);
    let mut rest = desired.clone();
    rest.objects.retain(|o| {
        let is_foreign = foreign.iter().any(|(k, n, _)| *k == o.kind && *n == o.name);
        let scales_foreign = deployment_foreign && o.kind == ChildKind::HorizontalPodAutoscaler;
        let uses_foreign_store = store_foreign && o.kind == ChildKind::Deployment;
        !(is_foreign || scales_foreign || uses_foreign_store)
    });
    // The hand-over runs whatever else is foreign: a conflict elsewhere may last for days, and
    // turning autoscaling on meanwhile must not drop the Deployment to one pod.
    apply::hand_over_replicas(&ctx.client, &seen.namespace, &rest, live).await?;
    // A refused store object is reported once the conflict below is resolved.
    apply::apply_all(&ctx.client, &seen.namespace, &rest).await?;
    let named = |standing: apply::Standing| -> Vec<String> {
        foreign
            .iter()
            .filter(|(_, _, s)| *s == standing)
            .map(|(k, n, _)| format!("{} {}/{n}", k.as_str(), seen.namespace))
            .collect()
    };
    let others = named(apply::Standing::Foreign);
    if others.is_empty() {
        return Err(ApplyError::AwaitingDeletion {
            objects: named(apply::Standing::Predecessor),
        });
    }
    Err(ApplyError::NotOwned { objects: others })
}

/// Prune stage: owned children no longer desired, then (once `spec.image` may run) finished scan
/// Jobs of other images. Both run; the first failure is returned.
async fn prune_leftovers(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    seen: &Observation<'_>,
    gate: &GateResult,
    desired: &Desired,
    inventory: &apply::Inventory,
) -> Result<(), PruneError> {
    let client = &ctx.client;
    let children = apply::prune(client, &seen.namespace, &seen.uid, desired, inventory).await;
    let jobs = if gate.state.is_open() {
        // The running image's rescan Job too: a failed one waits out its retry there.
        let keep: Vec<&str> = [
            Some(fkd.spec.image.as_str()),
            gate.last_known_good.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        apply::prune_scan_jobs(client, &seen.namespace, seen.name, &seen.uid, &keep).await
    } else {
        Ok(Vec::new())
    };
    let deleted_children = children.iter().flatten().map(|(k, n)| (k.as_str(), n));
    let deleted_jobs = jobs.iter().flatten().map(|n| ("Job", n));
    for (kind, name) in deleted_children.chain(deleted_jobs) {
        Pruned {
            object: &seen.key,
            namespace: &seen.namespace,
            kind,
            name,
        }
        .emit(&ctx.metrics);
    }
    children.and(jobs).map(drop)
}

fn next_requeue(gate: &GateResult, deployment: Option<&Deployment>) -> Duration {
    let rolling = deployment.is_some_and(|d| !status::DeploymentView::of(d).rollout_complete());
    [
        gate.requeue,
        rolling.then_some(ROLLOUT_REQUEUE),
        Some(STEADY_REQUEUE),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(STEADY_REQUEUE)
}

impl ApplyOutcome {
    fn of(failure: Option<&Error>) -> Self {
        match failure {
            None => ApplyOutcome::Applied,
            Some(e) => ApplyOutcome::Failed {
                category: e.category(),
                message: e.to_string(),
                refused: e.is_refused(),
            },
        }
    }
}

impl Observation<'_> {
    /// The status stage's input after the apply and prune stages ran.
    fn status_input<'s>(
        &'s self,
        fkd: &'s FaceKeyDeployment,
        gate: &'s GateResult,
        desired: &'s Desired,
        deployment: Option<&'s Deployment>,
        outcome: &'s ApplyOutcome,
    ) -> Observed<'s> {
        Observed {
            generation: fkd.meta().generation,
            old: fkd.status.as_ref(),
            deployment,
            spec_image: &fkd.spec.image,
            gate: &gate.state,
            record: gate.record.clone(),
            admitted: gate.admitted.as_deref(),
            last_known_good: gate.last_known_good.as_deref(),
            running: gate.running.clone(),
            outcome,
            skipped: &desired.skipped,
            store: &desired.store,
            database: self.database.as_ref(),
            selector: &desired.selector,
            url: &self.url,
            autoscaling_min: fkd.spec.autoscaling.as_ref().map(|a| a.min_replicas),
            now: self.now,
        }
    }
}

/// Status stage for an invalid spec: nothing was applied; the problems go to the conditions.
async fn write_invalid_status(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    seen: &Observation<'_>,
    invalid: &InvalidSpec,
) -> Result<(), StatusError> {
    let outcome = ApplyOutcome::InvalidSpec(invalid.message());
    let gate = held_or_pending(fkd, "spec is invalid".to_owned());
    write_early_status(ctx, fkd, seen, &outcome, &gate).await
}

/// The gate state of a reconcile whose scan gate did not decide (`why`): the recorded verdict
/// that closed the gate for `spec.image`, when there is one ([`scan_gate::recorded_hold`]), else
/// pending.
fn held_or_pending(fkd: &FaceKeyDeployment, why: String) -> GateState {
    let records = fkd.status.as_ref().map(|s| s.scans.as_slice());
    scan_gate::recorded_hold(records.unwrap_or_default(), &fkd.spec.image, &why)
        .unwrap_or(GateState::Pending(why))
}

/// The status of a reconcile that stopped before the desired state (an invalid spec, a scan
/// gate that could not run): `outcome` and `gate` as given, nothing applied.
async fn write_early_status(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    seen: &Observation<'_>,
    outcome: &ApplyOutcome,
    gate: &GateState,
) -> Result<(), StatusError> {
    let store = desired::store_state(
        seen.name,
        &fkd.spec,
        seen.capabilities.has(OptionalCrd::CloudNativePgCluster),
    );
    let observed = Observed {
        generation: fkd.meta().generation,
        old: fkd.status.as_ref(),
        deployment: seen.own_deployment(),
        spec_image: &fkd.spec.image,
        gate,
        record: None,
        admitted: None,
        last_known_good: scan_gate::last_known_good(fkd.status.as_ref()),
        running: None,
        outcome,
        skipped: &[],
        store: &store,
        database: seen.database.as_ref(),
        selector: &seen.selector,
        url: &seen.url,
        autoscaling_min: fkd.spec.autoscaling.as_ref().map(|a| a.min_replicas),
        now: seen.now,
    };
    write_status(ctx, fkd, &observed).await.map(drop)
}

/// The status of a reconcile that could not observe (see [`status::observe_failure`]), patched
/// when it changed. A resource without a name or namespace has nowhere to write it.
async fn write_observe_failure(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    e: &Error,
) -> Result<(), StatusError> {
    if fkd.meta().name.is_none() || fkd.namespace().is_none() {
        return Ok(());
    }
    let new = status::observe_failure(
        fkd.status.as_ref(),
        fkd.meta().generation,
        e.category(),
        &e.to_string(),
        e.is_refused(),
        (ctx.clock)(),
    );
    apply_status(ctx, fkd, &new).await
}

/// Apply `new` as the resource's status when it differs from the one it has. `status.sidecar`
/// belongs to the sidecar counter's field manager: never applied here, so a stale copy cannot
/// overwrite a newer count.
async fn apply_status(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    new: &FaceKeyDeploymentStatus,
) -> Result<(), StatusError> {
    if fkd.status.as_ref() == Some(new) {
        return Ok(());
    }
    patch_status(ctx, fkd, new).await
}

/// Server-side apply `new` (without `sidecar`) as the status of `fkd`. The answer is read
/// untyped: the status of a resource whose spec does not decode ([`crate::decode`]) is written
/// here too.
async fn patch_status(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    new: &FaceKeyDeploymentStatus,
) -> Result<(), StatusError> {
    let name = fkd.name_any();
    let applied = FaceKeyDeploymentStatus {
        sidecar: None,
        ..new.clone()
    };
    let patch = json!({
        "apiVersion": FaceKeyDeployment::api_version(&()),
        "kind": FaceKeyDeployment::kind(&()),
        "status": applied,
    });
    let api = crate::decode::api(
        ctx.client.clone(),
        Some(&fkd.namespace().unwrap_or_default()),
    );
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(drop)
    .map_err(|source| StatusError {
        name,
        source: Box::new(source),
    })
}

/// Field manager of the status written for a resource whose spec does not decode: its own, so
/// the apply of `observedGeneration` and `conditions` alone leaves every other status field the
/// reconciler wrote (the last-known-good image, scans) where it is, readable or not.
pub const UNDECODABLE_FIELD_MANAGER: &str = "facekey-operator-undecodable";

/// Attempts at writing that status (a failed one is retried after 1, 2, 4, 8 s): the decoder
/// reports a generation once, so a write lost here would leave GitOps tools waiting on an
/// unobserved generation.
const UNDECODABLE_STATUS_ATTEMPTS: u32 = 5;

/// Report a resource whose spec this operator cannot decode: a Warning Event, and its
/// conditions and `observedGeneration` saying so ([`status::undecodable`]); nothing else is
/// written for it, its children keep running as they are. `still` says whether it is still
/// undecodable at that generation, asked before every write, so a late retry never marks a
/// fixed (or re-created) resource Stalled again.
pub async fn report_undecodable(
    ctx: &Context,
    u: &crate::decode::Undecodable,
    still: &(dyn Fn() -> bool + Send + Sync),
) {
    let event = crate::events::SpecUndecodable {
        object: &u.object,
        reason: &u.reason,
    };
    if ctx.ensure_leading().is_err() || !still() {
        return;
    }
    publish(ctx, &u.placeholder, &event.event()).await;
    let new = status::undecodable(u.status.as_ref(), u.generation, &u.reason, (ctx.clock)());
    if u.status.as_ref() == Some(&new) {
        return;
    }
    let patch = conditions_patch(&new);
    let api = crate::decode::api(
        ctx.client.clone(),
        Some(&u.placeholder.namespace().unwrap_or_default()),
    );
    let name = u.placeholder.name_any();
    let params = PatchParams::apply(UNDECODABLE_FIELD_MANAGER).force();
    for attempt in 1..=UNDECODABLE_STATUS_ATTEMPTS {
        if ctx.ensure_leading().is_err() || !still() {
            return;
        }
        match api
            .patch_status(&name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => return,
            Err(e) if attempt < UNDECODABLE_STATUS_ATTEMPTS => {
                warn!(object = %u.object, error = %e, attempt, "writing the status of an undecodable resource failed; retrying");
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
            }
            Err(e) => {
                warn!(object = %u.object, error = %e, "writing the status of an undecodable resource failed; giving up until its next change");
            }
        }
    }
}

/// Status stage: compute the status, patch it when it changed, and publish transition Events.
async fn write_status(
    ctx: &Context,
    fkd: &FaceKeyDeployment,
    observed: &Observed<'_>,
) -> Result<FaceKeyDeploymentStatus, StatusError> {
    let new = status::compute(observed);
    let old = fkd.status.as_ref();
    apply_status(ctx, fkd, &new).await?;
    let (object, namespace) = (key(fkd), fkd.namespace().unwrap_or_default());
    let mut events = Vec::new();
    if let Some(change) = status::verdict_change(old, &new, &fkd.spec.image) {
        let verdict = ScanVerdict {
            object: &object,
            namespace: &namespace,
            verdict: change.verdict,
            message: change.message,
        };
        verdict.emit(&ctx.metrics);
        if change.newly_blocked {
            RolloutBlocked {
                object: &object,
                namespace: &namespace,
                name: &fkd.name_any(),
                image: change.image,
                verdict: change.verdict,
            }
            .emit(&ctx.metrics);
        }
        events.push(verdict.event());
    }
    events.extend(status::transition_events(old, &new));
    for ev in &events {
        publish(ctx, fkd, ev).await;
    }
    Ok(new)
}
