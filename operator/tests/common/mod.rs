//! Shared harness for reconciler tests against kube-fake-client's in-memory API server.
//!
//! The fake API has no controllers: tests play the Deployment controller (status), the Job
//! controller and the kubelet (scan pod termination message) themselves.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use facekey_crds::FaceKeyDeployment;
use facekey_operator::capabilities::CapabilityCache;
use facekey_operator::desired::OptionalCrd;
use facekey_operator::metrics::Metrics;
use facekey_operator::policy_floor::ClusterPolicy;
use facekey_operator::reconcile::{self, Context};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, CustomResource};
use kube_fake_client::{ClientBuilder, PatchType, interceptor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub mod lifecycle;
pub mod rbac;
pub mod replay;
pub mod ssa;
pub mod watch;

pub const NS: &str = "team";

/// Stand-ins so the fake API can route the optional kinds (the operator uses dynamic objects).
pub mod kinds {
    use super::*;

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "monitoring.coreos.com",
        version = "v1",
        kind = "ServiceMonitor",
        namespaced
    )]
    pub struct ServiceMonitorSpec {
        #[serde(flatten)]
        pub rest: BTreeMap<String, Value>,
    }

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "monitoring.coreos.com",
        version = "v1",
        kind = "PodMonitor",
        namespaced
    )]
    pub struct PodMonitorSpec {
        #[serde(flatten)]
        pub rest: BTreeMap<String, Value>,
    }

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "monitoring.coreos.com",
        version = "v1",
        kind = "PrometheusRule",
        namespaced
    )]
    pub struct PrometheusRuleSpec {
        #[serde(flatten)]
        pub rest: BTreeMap<String, Value>,
    }

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "monitoring.coreos.com",
        version = "v1alpha1",
        kind = "AlertmanagerConfig",
        namespaced
    )]
    pub struct AlertmanagerConfigSpec {
        #[serde(flatten)]
        pub rest: BTreeMap<String, Value>,
    }

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "aquasecurity.github.io",
        version = "v1alpha1",
        kind = "VulnerabilityReport",
        namespaced
    )]
    pub struct VulnerabilityReportSpec {
        #[serde(flatten)]
        pub rest: BTreeMap<String, Value>,
    }

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
    #[kube(
        group = "postgresql.cnpg.io",
        version = "v1",
        kind = "Cluster",
        namespaced,
        derive = "Default"
    )]
    pub struct ClusterSpec {
        #[serde(flatten)]
        pub rest: BTreeMap<String, Value>,
    }
}

/// Time just after the recorded reports' `CreatedAt` (2025-11-20T09:31Z).
pub fn t0() -> Timestamp {
    "2025-11-20T10:00:00Z".parse().unwrap()
}

/// A clock tests can move.
#[derive(Clone)]
pub struct TestClock(Arc<std::sync::Mutex<Timestamp>>);

impl TestClock {
    pub fn new(t: Timestamp) -> Self {
        Self(Arc::new(std::sync::Mutex::new(t)))
    }
    pub fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap() = t;
    }
    pub fn advance(&self, secs: i64) {
        let mut t = self.0.lock().unwrap();
        *t = t
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
            .unwrap();
    }
    pub fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

pub struct Harness {
    pub client: Client,
    pub ctx: Arc<Context>,
    pub clock: TestClock,
    /// While set, every apply of a Deployment fails with 409 Conflict.
    pub fail_deployment_applies: Arc<AtomicBool>,
    /// While set, creating a Job is refused (as a `count/jobs.batch` quota would).
    pub fail_job_creates: Arc<AtomicBool>,
    /// While set, every Job is stored with an `HTTPS_PROXY` variable added to each of its pod
    /// template's containers, as a cluster's mutating admission policy (Kyverno's autogen of a
    /// Pod rule) would add it at creation.
    pub admission_adds_proxy_to_jobs: Arc<AtomicBool>,
}

/// Patch interceptor emulating API-server behaviours the fake lacks or tests need:
/// an apply that changes nothing does not bump `metadata.generation` (the fake bumps it on every
/// write, which would make every Deployment look mid-rollout), injected 409 Conflicts, and the
/// PersistentVolumeClaim rules a real server enforces (a bound claim's storage class is
/// immutable and its requested size cannot shrink: 422), and refused Job creations.
fn interceptor(
    fail: Arc<AtomicBool>,
    fail_jobs: Arc<AtomicBool>,
    proxy_jobs: Arc<AtomicBool>,
) -> interceptor::Funcs {
    interceptor::Funcs::new()
        .patch_status(status_apply_rule(StatusApplies::default()))
        .create(move |ctx| {
            if ctx.object.get("kind").and_then(Value::as_str) != Some("Job") {
                return Ok(None);
            }
            if fail_jobs.load(Ordering::SeqCst) {
                return Err(kube_fake_client::Error::InvalidRequest(
                    "jobs is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1, \
                     used: count/jobs.batch=5, limited: count/jobs.batch=5"
                        .into(),
                ));
            }
            if proxy_jobs.load(Ordering::SeqCst) {
                let mut job = ctx.object.clone();
                let pod = &mut job["spec"]["template"]["spec"];
                for list in ["initContainers", "containers"] {
                    for c in pod[list].as_array_mut().into_iter().flatten() {
                        let env = c["env"].as_array().cloned().unwrap_or_default();
                        let proxy = json!({"name": "HTTPS_PROXY", "value": "http://proxy:3128"});
                        c["env"] = Value::Array(env.into_iter().chain([proxy]).collect());
                    }
                }
                let job: Job = serde_json::from_value(job)?;
                let stored = ctx.client.create(ctx.namespace, &job, ctx.params)?;
                return Ok(Some(serde_json::to_value(stored)?));
            }
            Ok(None)
        })
        .patch(move |ctx| {
        if let Some(answer) = test_only_json_patch(&ctx) {
            return answer;
        }
        if ctx.patch.get("kind").and_then(Value::as_str) == Some("PersistentVolumeClaim") {
            let Ok(existing) = ctx
                .client
                .get::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(ctx.namespace, ctx.name)
            else {
                return Ok(None);
            };
            let existing = serde_json::to_value(existing).unwrap();
            let class = |v: &Value| v.pointer("/spec/storageClassName").cloned();
            if class(ctx.patch).is_some() && class(ctx.patch) != class(&existing) {
                return Err(kube_fake_client::Error::InvalidRequest(format!(
                    "PersistentVolumeClaim \"{}\" is invalid: spec: Forbidden: spec is immutable \
                     after creation except resources.requests and volumeAttributesClassName for \
                     bound claims",
                    ctx.name
                )));
            }
            let size = |v: &Value| {
                v.pointer("/spec/resources/requests/storage")
                    .and_then(Value::as_str)
                    .and_then(quantity_bytes)
            };
            if let (Some(new), Some(old)) = (size(ctx.patch), size(&existing))
                && new < old
            {
                return Err(kube_fake_client::Error::InvalidRequest(format!(
                    "PersistentVolumeClaim \"{}\" is invalid: spec.resources.requests.storage: \
                     Forbidden: field can not be less than status.capacity",
                    ctx.name
                )));
            }
            return Ok(None);
        }
        if ctx.patch.get("kind").and_then(Value::as_str) != Some("Deployment") {
            return Ok(None);
        }
        if fail.load(Ordering::SeqCst) {
            return Err(kube_fake_client::Error::Conflict(
                "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas".into(),
            ));
        }
        if ctx.patch_type != PatchType::ApplyPatch {
            return Ok(None);
        }
        let Ok(existing) = ctx.client.get::<Deployment>(ctx.namespace, ctx.name) else {
            return Ok(None);
        };
        let existing = serde_json::to_value(existing).unwrap();
        let mut merged = existing.clone();
        json_patch::merge(&mut merged, ctx.patch);
        if merged == existing { Ok(Some(existing)) } else { Ok(None) }
    })
}

/// What each field manager last applied to a FaceKeyDeployment's status: the top-level fields,
/// by namespace, name and manager.
type StatusApplies = Arc<std::sync::Mutex<BTreeMap<(String, String, String), BTreeSet<String>>>>;

/// A status server-side apply of a FaceKeyDeployment as a real server treats it, at the level of
/// the status's top-level fields: one the manager applied before and leaves out now is removed
/// (unless another manager's last apply holds it), where the fake merges the apply like a JSON
/// merge patch and keeps it. So a status path that forgot `lastKnownGoodImage` loses it here as
/// on a cluster (where the next desired state would then run no image), instead of passing.
/// Nested fields are the status's own lists and the sidecar counter's `sidecar`, applied whole.
pub fn status_apply_rule(
    applied: StatusApplies,
) -> impl Fn(interceptor::PatchStatusContext) -> kube_fake_client::Result<Option<Value>>
+ Send
+ Sync
+ 'static {
    move |ctx| {
        if ctx.patch_type != PatchType::ApplyPatch
            || ctx.patch.get("kind").and_then(Value::as_str) != Some("FaceKeyDeployment")
        {
            return Ok(None);
        }
        let manager = ctx.params.field_manager.clone().unwrap_or_default();
        let keys: BTreeSet<String> = ctx
            .patch
            .get("status")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let object = (ctx.namespace.to_owned(), ctx.name.to_owned());
        let removed: Vec<String> = {
            let mut applied = applied.lock().unwrap();
            let before = applied
                .insert(
                    (object.0.clone(), object.1.clone(), manager.clone()),
                    keys.clone(),
                )
                .unwrap_or_default();
            let held_by_others: BTreeSet<String> = applied
                .iter()
                .filter(|((ns, name, m), _)| (ns, name) == (&object.0, &object.1) && *m != manager)
                .flat_map(|(_, k)| k.iter().cloned())
                .collect();
            before
                .difference(&keys)
                .filter(|k| !held_by_others.contains(*k))
                .cloned()
                .collect()
        };
        if removed.is_empty() {
            return Ok(None);
        }
        let Ok(current) = ctx.client.get::<FaceKeyDeployment>(ctx.namespace, ctx.name) else {
            return Ok(None);
        };
        let mut value = serde_json::to_value(&current).unwrap();
        if let Some(status) = value.get_mut("status").and_then(Value::as_object_mut) {
            for key in &removed {
                status.remove(key);
            }
        }
        let Ok(trimmed) = serde_json::from_value::<FaceKeyDeployment>(value) else {
            return Ok(None);
        };
        ctx.client
            .update_status(ctx.namespace, &trimmed, &PostParams::default())?;
        Ok(None)
    }
}

/// A JSON patch (RFC 6902) made only of `test` operations, as the operator sends to check a
/// store object's labels, answered as a real API server does: 404 when the object is missing
/// (the fake's own answer), 422 when a test fails, and the object unchanged when they pass —
/// with nothing written (the fake would store the unchanged object again and bump its
/// `resourceVersion`; the server skips a write that changes nothing). Only claims and
/// CloudNativePG Clusters are looked up (the patch names no kind); `None` for anything else.
pub fn test_only_json_patch(
    ctx: &interceptor::PatchContext<'_>,
) -> Option<Result<Option<Value>, kube_fake_client::Error>> {
    if ctx.patch_type != PatchType::JsonPatch {
        return None;
    }
    let ops = ctx.patch.as_array()?;
    if ops.is_empty() || ops.iter().any(|op| op["op"] != "test") {
        return None;
    }
    let existing = ctx
        .client
        .get::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(ctx.namespace, ctx.name)
        .ok()
        .map(|o| serde_json::to_value(o).unwrap())
        .or_else(|| {
            ctx.client
                .get::<kinds::Cluster>(ctx.namespace, ctx.name)
                .ok()
                .map(|o| serde_json::to_value(o).unwrap())
        })?;
    let patch: json_patch::Patch = serde_json::from_value(ctx.patch.clone()).unwrap();
    let mut scratch = existing.clone();
    Some(match json_patch::patch(&mut scratch, &patch) {
        Ok(()) => Ok(Some(existing)),
        Err(e) => Err(kube_fake_client::Error::PatchError(e)),
    })
}

/// Bytes of a Kubernetes quantity with a binary or decimal suffix (enough for claim sizes).
fn quantity_bytes(q: &str) -> Option<f64> {
    let units = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (number, scale) = units
        .iter()
        .find_map(|(suffix, scale)| q.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((q, 1.0));
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn crd(name: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {"group": "x", "names": {"kind": "X", "plural": "xs"}, "scope": "Namespaced", "versions": []},
    }))
    .unwrap()
}

pub fn builder(installed: &[OptionalCrd]) -> ClientBuilder {
    let mut b = ClientBuilder::new()
        .with_resource::<FaceKeyDeployment>()
        .with_status_subresource::<FaceKeyDeployment>()
        .with_status_subresource::<Deployment>()
        .with_status_subresource::<Job>()
        .with_resource::<kinds::ServiceMonitor>()
        .with_resource::<kinds::PodMonitor>()
        .with_resource::<kinds::PrometheusRule>()
        .with_resource::<kinds::AlertmanagerConfig>()
        .with_resource::<kinds::VulnerabilityReport>()
        .with_resource::<kinds::Cluster>();
    for c in installed {
        b = b.with_object(crd(c.crd_name()));
    }
    b
}

/// The reconciler context tests use: fresh metrics, the test clock, no capability caching and
/// no scan policy floor (tests choose their gate; tests/pod_overrides.rs covers the floor). Its
/// client may do only what `manifests/rbac.yaml` grants ([`rbac::enforcing`]).
pub fn test_context(client: &Client, clock: &TestClock) -> Context {
    let c = clock.clone();
    Context::new(
        rbac::enforcing(client.clone()),
        Metrics::new().unwrap(),
        "ghcr.io/facekey/operator:test".into(),
        Some("test".into()),
    )
    .with_clock(Arc::new(move || c.now()))
    .with_capabilities(CapabilityCache::with_ttl(client.clone(), Duration::ZERO))
    .with_policy(ClusterPolicy::permissive())
}

pub async fn harness(installed: &[OptionalCrd]) -> Harness {
    harness_from(builder(installed)).await
}

pub async fn harness_from(builder: ClientBuilder) -> Harness {
    let fail = Arc::new(AtomicBool::new(false));
    let fail_jobs = Arc::new(AtomicBool::new(false));
    let proxy_jobs = Arc::new(AtomicBool::new(false));
    let client = watch::serving(
        builder
            .with_interceptor_funcs(interceptor(
                fail.clone(),
                fail_jobs.clone(),
                proxy_jobs.clone(),
            ))
            .build()
            .await
            .unwrap(),
    );
    let clock = TestClock::new(t0());
    let ctx = test_context(&client, &clock);
    Harness {
        client,
        ctx: Arc::new(ctx),
        clock,
        fail_deployment_applies: fail,
        fail_job_creates: fail_jobs,
        admission_adds_proxy_to_jobs: proxy_jobs,
    }
}

impl Harness {
    pub fn fkds(&self) -> Api<FaceKeyDeployment> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    pub async fn create(&self, name: &str, spec: Value) -> FaceKeyDeployment {
        let obj: FaceKeyDeployment = serde_json::from_value(json!({
            "apiVersion": "facekey.dev/v1alpha1",
            "kind": "FaceKeyDeployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }))
        .unwrap();
        self.fkds()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap()
    }

    pub async fn get(&self, name: &str) -> FaceKeyDeployment {
        self.fkds().get(name).await.unwrap()
    }

    /// Patch the spec the way a user (or `kubectl scale`) would.
    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.fkds()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .unwrap();
    }

    /// Read the resource fresh and reconcile it once.
    pub async fn reconcile(&self, name: &str) -> Result<Action, facekey_operator::Error> {
        let fkd = self.get(name).await;
        reconcile::reconcile(Arc::new(fkd), self.ctx.clone()).await
    }

    pub async fn deployment(&self, name: &str) -> Option<Deployment> {
        self.api::<Deployment>().get_opt(name).await.unwrap()
    }

    /// Image of the runtime container (found by name: under server-side apply a container
    /// another manager added may come first).
    pub async fn deployment_image(&self, name: &str) -> Option<String> {
        let d = self.deployment(name).await?;
        d.spec?
            .template
            .spec?
            .containers
            .into_iter()
            .find(|c| c.name == "runtime")?
            .image
    }

    /// Play the Deployment controller: all desired replicas updated and available.
    pub async fn mark_deployment_ready(&self, name: &str) {
        let d = self.deployment(name).await.expect("deployment exists");
        let n = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let generation = d.metadata.generation.unwrap_or(1);
        self.api::<Deployment>()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "observedGeneration": generation,
                    "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n,
                }})),
            )
            .await
            .unwrap();
    }

    /// Names of the scan Jobs in the namespace.
    pub async fn jobs(&self) -> Vec<String> {
        self.api::<Job>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect()
    }

    /// Play the Job controller and kubelet: the scan Job succeeded and its summary container
    /// terminated with the summary that `facekey-operator scan-summary` produced from `fixture`
    /// (a pod with a random suffix carrying the Job's uid, see [`lifecycle`]).
    pub async fn complete_scan(&self, job: &str, fixture: &str, image: &str) {
        let summary = scan_summary_of(fixture, image);
        self.run_scan_job(job, lifecycle::ScanOutcome::Summary(summary))
            .await;
    }

    /// Play the Job controller: the scan Job failed.
    pub async fn fail_scan(&self, job: &str, at: &str) {
        self.api::<Job>()
            .patch_status(
                job,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "failed": 2,
                    "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                    "message": "Job has reached the specified backoff limit",
                                    "lastTransitionTime": at}],
                }})),
            )
            .await
            .unwrap();
    }

    pub fn metric(&self, name: &str, label: &str) -> u64 {
        let text = self.ctx.metrics.encode().unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// Type and reason of the Events published about `name`, oldest first.
    pub async fn event_reasons(&self, name: &str) -> Vec<(String, String)> {
        self.events(name)
            .await
            .into_iter()
            .map(|(type_, reason, _)| (type_, reason))
            .collect()
    }

    /// Type, reason and note of the Events published about `name`, oldest first.
    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let events: Api<k8s_openapi::api::events::v1::Event> = self.api();
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// Run the real `facekey-operator scan-summary` (the command scan Jobs run) on a recorded report.
pub fn scan_summary_of(fixture: &str, image: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/trivy/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facekey-operator"))
        .args(["scan-summary", "--report", &path, "--image", image])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The condition `type_` of a status as (status, reason).
pub fn cond(fkd: &FaceKeyDeployment, type_: &str) -> (String, String) {
    let c = fkd
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", fkd.status));
    (c.status.clone(), c.reason.clone())
}

pub fn cond_message(fkd: &FaceKeyDeployment, type_: &str) -> String {
    fkd.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// `inner`, except that every GET whose path contains `path` (`/jobs`, `/vulnerabilityreports`)
/// is answered with HTTP `code` and a Status saying `message`, as a real API server answers a
/// request it refuses (403: a Role without the verb) or cannot serve (500: etcd timing out).
/// A context over it ([`test_context`]) has metrics of its own.
pub fn answering_gets(
    inner: Client,
    path: &'static str,
    code: u16,
    message: &'static str,
) -> Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        async move {
            if req.method() == http::Method::GET && req.uri().path().contains(path) {
                let reason = match code {
                    403 => "Forbidden",
                    404 => "NotFound",
                    _ => "InternalError",
                };
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": reason, "code": code,
                });
                return Ok(http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&status).unwrap(),
                    ))
                    .unwrap());
            }
            inner.send(req).await
        }
    });
    Client::new(svc, NS)
}
